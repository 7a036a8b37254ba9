"""VAE loss terms, per image (summed over pixels / latent dims), in nats for BCE."""
from keras import ops

_EPS = 1e-7


def reconstruction_loss(x, x_hat, kind: str):
    """Per-image reconstruction loss: BCE or squared error, summed over all pixels."""
    x = ops.reshape(x, (ops.shape(x)[0], -1))
    x_hat = ops.reshape(x_hat, (ops.shape(x_hat)[0], -1))
    if kind == "bce":
        x_hat = ops.clip(x_hat, _EPS, 1.0 - _EPS)
        return -ops.sum(x * ops.log(x_hat) + (1.0 - x) * ops.log(1.0 - x_hat), axis=-1)
    if kind == "mse":
        return ops.sum(ops.square(x - x_hat), axis=-1)
    raise ValueError(f"Expected `kind` to be 'bce' or 'mse'. Received: kind={kind}")


def kl_divergence(mean, log_var):
    """KL(q(z|x) || N(0, I)) per image."""
    return -0.5 * ops.sum(1.0 + log_var - ops.square(mean) - ops.exp(log_var), axis=-1)
