import torch

from inference.denormals import denormals_flushed, flushing_denormals


def test_flushing_denormals_reads_and_writes_denormals_as_zero_and_restores_the_mode_it_found():
    torch.set_flush_denormal(False)
    tiny = torch.full((4,), 1e-39)  # float32 denormal
    assert not denormals_flushed() and (tiny * 1.0).eq(1e-39).all()
    with flushing_denormals(True):
        assert denormals_flushed()
        assert (tiny * 1.0).eq(0).all()
        assert (torch.full((4,), 2e-38) / 4).eq(0).all()  # a result below 2^-126 is written as 0
        assert (torch.full((4,), 4e-38) / 2).eq(2e-38).all()  # a normal one is exact
        with flushing_denormals(False):
            assert not denormals_flushed() and (tiny * 1.0).eq(1e-39).all()
        assert denormals_flushed()
    assert not denormals_flushed()
