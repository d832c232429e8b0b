"""``pyro-vae list``: every component that can be chosen by name, with its options (:mod:`pyro_vae.cli.catalogue`)."""

import json


def add_parser(sub):
    p = sub.add_parser("list", help="list the components that can be chosen by name, with their options")
    p.add_argument(
        "--json", action="store_true", help="print every component with its options, defaults and one-line docs as JSON"
    )
    p.add_argument("--plugin", action="append", help="a Python file that registers components: list them too")
    p.set_defaults(run=run)


def run(args):
    from pyro_vae.cli.catalogue import build_catalogue, read_catalogue

    # from the registries; without a plugin, cached under the sources' fingerprint so that no torch is imported
    listing = build_catalogue() if args.plugin else read_catalogue()
    if args.json:
        print(json.dumps(listing, indent=2))
        return
    components = listing["components"]
    print(f"data.name: {', '.join(listing['datasets'])}, or the path of your own .npy/.npz/.pt/.csv file")
    width = max(len(name) for table in components.values() for name in table) + 2
    for path, table in components.items():
        print(f"\n{path}:")
        for name, entry in table.items():
            print(f"  {name:<{width}}{_summary(entry['doc'], 100)}")
            options = ", ".join(f"{key}={json.dumps(value, default=str)}" for key, value in entry["options"].items())
            if options:
                print(f"  {'':<{width}}options: {options}")
    print("\n`pyro-vae list --json` gives the same with whole docs; `pyro-vae train --help` shows how to set each.")


def _summary(doc: str, limit: int) -> str:
    """A docstring's opening as plain text: reST markup dropped, cut at a word boundary."""
    import re

    text = re.sub(r":\w+:`~?([^`]+)`", r"\1", doc).replace("``", "")
    return text if len(text) <= limit else text[: text.rfind(" ", 0, limit - 1)] + " ..."
