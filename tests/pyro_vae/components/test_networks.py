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


def test_pixel_shuffle_decoder_passes_a_gradient_check_and_rearranges_channels_into_blocks():
    torch.manual_seed(0)
    decoder = NETWORKS.build(
        "deconv", in_dim=3, out_dim=64, image_shape=(1, 8, 8), channels=[4], upsampling="pixel-shuffle"
    ).double()
    z = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    assert decoder(z).shape == (2, 64)
    assert torch.autograd.gradcheck(decoder, (z,))  # analytic gradients equal finite differences
    # the pixel-shuffle step: channel c * 4 + 2 i + j at (h, w) lands at (2 h + i, 2 w + j) of channel c
    shuffle = torch.nn.PixelShuffle(2)
    grid = torch.arange(8.0).reshape(1, 8, 1, 1)
    assert shuffle(grid)[0, 1].tolist() == [[4.0, 5.0], [6.0, 7.0]]


def test_pixel_shuffle_decoder_trains_on_fashion_mnist_crops():
    from inference import Trainer, estimator
    from pyro_vae.config import Component, ModelConfig
    from pyro_vae.data import load_dataset
    from pyro_vae.vae import build_model
    from tests.conftest import require_fashion_mnist

    require_fashion_mnist()
    images = load_dataset("fashion-mnist", seed=0).train[:2048].reshape(-1, 28, 28)[:, 6:22, 6:22]  # 16x16 crops
    x = images.reshape(-1, 256).bernoulli(generator=torch.Generator().manual_seed(0))
    config = ModelConfig(
        latent_dim=8,
        encoder=Component("mlp", {"hidden_sizes": [128]}),
        decoder=Component("deconv", {"channels": [16, 8], "upsampling": "pixel-shuffle"}),
    )
    vae = build_model(config, 256, num_data=len(x), image_shape=(1, 16, 16))
    trainer = Trainer(vae.model, vae.guide, estimator("elbo", max_plate_nesting=1), module=vae)
    first = trainer.train_epoch([(b,) for b in x.split(64)], num_data=len(x))
    for _ in range(4):
        last = trainer.train_epoch([(b,) for b in x.split(64)], num_data=len(x))
    assert last > first + 5  # nats per example: the decoder learns
