"""The reference digit classifier: a small CNN used to score synthetic data (label fidelity, CAS) and to filter
records inside the generate job.

Architecture (plain Keras layers, so `keras.models.load_model` loads `classifier.keras` without this package):
raw pixels 0..255 as float32 (H, W, 1) -> Rescaling(1/255) -> per conv block: Conv2D(f, k, valid, relu) +
MaxPooling2D(2) -> Flatten -> Dropout -> Dense(units, relu) -> Dropout -> Dense(num_classes) logits.

Modules: config (the YAML config), model (the network), training (from a source, arrays, a tf.data stream, or a
real + synthetic mix), prediction (batched probabilities and scores), directory (classifier.keras +
classifier.json: read, load, write).
"""
from vae_model.classifier.config import (ClassifierConfig, ClassifierModelConfig, ClassifierTrainConfig,
                                         classifier_config_from_dict, load_classifier_config)
from vae_model.classifier.directory import (CLASSIFIER, CLASSIFIER_META, bundled_classifier_dir, load_classifier,
                                            read_classifier_meta, write_classifier_dir)
from vae_model.classifier.model import build_classifier
from vae_model.classifier.prediction import PREDICT_BATCH, Classifier, evaluate_accuracy, prob_of_label
from vae_model.classifier.training import (SHUFFLE_BUFFER, check_real_share, init_weights_from, planned_steps,
                                           train_classifier, train_on_arrays, train_on_dataset, train_on_mix)

__all__ = ["CLASSIFIER", "CLASSIFIER_META", "PREDICT_BATCH", "SHUFFLE_BUFFER", "Classifier", "ClassifierConfig",
           "ClassifierModelConfig", "ClassifierTrainConfig", "build_classifier", "bundled_classifier_dir",
           "check_real_share", "classifier_config_from_dict", "evaluate_accuracy", "init_weights_from",
           "load_classifier", "load_classifier_config", "planned_steps", "prob_of_label", "read_classifier_meta",
           "train_classifier", "train_on_arrays", "train_on_dataset", "train_on_mix", "write_classifier_dir"]
