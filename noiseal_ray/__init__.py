"""noiseal-ray: find and fix wrong labels in text-classification corpora (NoiseAL on Ray).

Nothing is imported eagerly: importing the package costs nothing and starts nothing.
"""

__version__ = "0.1.0"
