"""The reparameterisation layer, seeded through Keras' SeedGenerator."""
import keras
from keras import ops


@keras.saving.register_keras_serializable(package="vae_augment")
class Sampling(keras.layers.Layer):
    """Draws z = mean + exp(log_var / 2) * eps with eps ~ N(0, I)."""

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise ValueError(f"Expected `seed` to be None or a non-negative int. Received: seed={seed}")
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs):
        mean, log_var = inputs
        eps = keras.random.normal(ops.shape(mean), seed=self.seed_generator)
        return mean + ops.exp(0.5 * log_var) * eps

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}
