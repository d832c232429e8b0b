import pytest
import torch

from pyro_vae.components import NETWORKS


@pytest.mark.parametrize("image_shape", [(1, 28, 28), (3, 32, 32)])
@pytest.mark.parametrize("upsampling", ["transposed", "pixel-shuffle"])
def test_conv_encoder_and_decoder_keep_leading_dimensions(image_shape, upsampling):
    data_dim = image_shape[0] * image_shape[1] * image_shape[2]
    encoder = NETWORKS.build("conv", in_dim=data_dim, out_dim=10, image_shape=image_shape)
    decoder = NETWORKS.build("deconv", in_dim=5, out_dim=2 * data_dim, image_shape=image_shape, upsampling=upsampling)
    x = torch.rand(3, 4, data_dim)  # particles x batch x pixels
    z = torch.randn(3, 4, 5)
    assert encoder(x).shape == (3, 4, 10)
    assert decoder(z).shape == (3, 4, 2 * data_dim)
    # parameter-major output: the first block of D entries is the first parameter, laid out as the image
    grid = decoder(z[0, :1]).reshape(2, *image_shape)
    assert torch.equal(grid[0].flatten(), decoder(z[0, :1])[0, :data_dim])


def test_conv_networks_explain_what_they_need():
    with pytest.raises(ValueError, match="needs image data"):
        NETWORKS.build("conv", in_dim=10, out_dim=4, image_shape=None)
    with pytest.raises(ValueError, match="multiples of 8"):
        NETWORKS.build("conv", in_dim=28 * 28, out_dim=4, image_shape=(1, 28, 28), channels=(8, 8, 8))
    with pytest.raises(ValueError, match="as a decoder use 'deconv'"):
        NETWORKS.build("conv", in_dim=5, out_dim=784, image_shape=(1, 28, 28))
