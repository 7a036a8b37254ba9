"""The bundled YAML configs; installed as the package `vae_model.configs` so `--config NAME` finds them."""
