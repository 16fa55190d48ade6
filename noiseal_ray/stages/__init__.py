"""The stages of a run, one module each; ``noiseal_ray.pipeline`` calls them in order."""
