import pytest

from inference.registry import Registry


def test_register_build_and_names():
    table = Registry("widget")

    @table.register("double")
    def double(value=1):
        return 2 * value

    assert table.build("double", value=4) == 8
    assert table.names() == ["double"] and "double" in table


def test_unknown_name_lists_choices_and_suggests():
    table = Registry("prior")
    table.register("normal")(dict)
    table.register("vamp")(dict)
    with pytest.raises(
        ValueError, match=r"unknown prior 'norml'\. Did you mean 'normal'\? Choose one of: normal, vamp"
    ):
        table.build("norml")


def test_duplicate_registration_is_an_error():
    table = Registry("guide")
    table.register("a")(dict)
    with pytest.raises(ValueError, match="already registered"):
        table.register("a")(list)


def test_one_definition_loaded_twice_may_register_again_but_another_may_not(tmp_path):
    import importlib.util

    source = tmp_path / "plugin.py"
    lines = ["from tests.inference.test_registry import TABLE", "@TABLE.register('x')", "class X:", "    def f(self):"]
    source.write_text("\n".join([*lines, "        pass", ""]))
    for name in ("first", "second"):  # the same file under two module names, as a plugin and an import
        spec = importlib.util.spec_from_file_location(name, source)
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
    with pytest.raises(ValueError, match="already registered"):

        @TABLE.register("x")
        class Other:
            def f(self):
                pass


TABLE = Registry("thing")
