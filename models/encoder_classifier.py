"""EncoderClassifier: a classifier built as "pretrained encoder + head".

The representation h = f(x̃) that a denoising autoencoder learns is meant to help a
classifier, most of all when labels are few (Vincent et al. 2010). This module builds that
classifier around the encoder of a trained :class:`~models.conv_dae.ConvDAE`: the encoder's
code output (the skip tensors a U-Net encoder also hands its decoder are ignored), a pooling
layer, dropout and a dense softmax.

The classifier always works on its *own copy* of the encoder's layers (:func:`code_encoder`),
so freezing it for a linear probe never flips flags on the pretrained model's layers, and a
new phase of training (the head first, then everything) is a new model built from the old
one's config and weights, never an in-place change. :func:`feature_extractor` is the same
encoder and pooling without the head: what ``training.export`` writes and serves.
"""

from __future__ import annotations

import copy

import keras
import numpy as np
from keras import layers

POOLINGS = ("avg", "max", "flatten")
"""How the code map ``(h, w, bottleneck)`` becomes a vector: global average, global max, or
the whole map flattened (keeps where things are; needs a fixed image size)."""


def _source_encoder(model) -> keras.Model:
    """The functional encoder inside a ConvDAE or an EncoderClassifier, or ``model`` itself."""
    inner = getattr(model, "encoder", None)
    encoder = inner if isinstance(inner, keras.Model) else model
    if not isinstance(encoder, keras.Model) or not hasattr(encoder, "outputs") or not encoder.outputs:
        raise TypeError(
            "expected a ConvDAE, an EncoderClassifier or a functional encoder model, "
            f"got {type(model).__name__}")
    return encoder


def _under_current_policy(layer):
    """A new layer like ``layer`` that takes Keras's global dtype policy of the moment."""
    config = layer.get_config()
    config.pop("dtype", None)
    return layer.__class__.from_config(config)


def code_encoder(model, pretrained: bool = True, name: str = "encoder") -> keras.Model:
    """A new functional model, image -> code, with layers of its own.

    Args:
        model: a :class:`~models.conv_dae.ConvDAE`, an :class:`EncoderClassifier` or a
            functional encoder; with skip connections its outputs are
            ``[image, skip0, ..., code]`` and only the last one, the code, is kept.
        pretrained: copy the trained weights; ``False`` gives the same architecture from fresh
            random weights (drawn from Keras' global seed, see ``keras.utils.set_random_seed``).
        name: the new model's name.

    Returns:
        A functional ``keras.Model`` whose layers are not shared with ``model``.
    """
    encoder = _source_encoder(model)
    code_only = keras.Model(encoder.inputs[0], encoder.outputs[-1])
    # New layers, freshly initialised, computing in the dtype policy in force now rather than
    # the one they were saved with: a classifier fine-tuned under mixed_bfloat16 and loaded
    # later computes in float32 (unless bfloat16 is asked for again: registry.with_precision).
    fresh = keras.models.clone_model(code_only, clone_function=_under_current_policy)
    if pretrained:
        fresh.set_weights(code_only.get_weights())
    for layer in fresh.layers:  # a copy starts trainable, whatever the source's flags were
        layer.trainable = True
    return keras.Model(fresh.inputs[0], fresh.outputs[0], name=name)


def _input_shape(encoder: keras.Model, image_size) -> tuple:
    channels = encoder.inputs[0].shape[-1]
    if image_size is None:
        return (None, None, channels)
    return (*image_size, channels)


def _check_pooling(pooling: str, image_size) -> None:
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    if pooling == "flatten" and image_size is None:
        raise ValueError("pooling='flatten' needs a fixed image_size (H, W), got None")


def _pool(code, pooling: str):
    layer = {"avg": layers.GlobalAveragePooling2D, "max": layers.GlobalMaxPooling2D,
             "flatten": layers.Flatten}[pooling]
    return layer(name=f"{pooling}_pool")(code)


def _size(image_size):
    if image_size is None:
        return None
    size = tuple(int(s) for s in image_size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"image_size must be (height, width) with positive sides, got {image_size}")
    return size


def feature_extractor(model, pooling: str = "avg", image_size=None) -> keras.Model:
    """Image -> feature vector: the code encoder of ``model`` followed by ``pooling``.

    Args:
        model: anything :func:`code_encoder` accepts (a DAE or a fine-tuned classifier).
        pooling: one of :data:`POOLINGS`.
        image_size: ``(H, W)`` to fix the input size (needed by ``"flatten"``), or ``None``.

    Returns:
        A functional model ``"features"`` with its own copy of the encoder's trained weights.
    """
    size = _size(image_size)
    _check_pooling(pooling, size)
    encoder = code_encoder(model)
    image = keras.Input(_input_shape(encoder, size), name="image")
    return keras.Model(image, _pool(encoder(image), pooling), name="features")


@keras.saving.register_keras_serializable(package="dae")
class EncoderClassifier(keras.Model):
    """Pretrained encoder + head (pooling, feature standardisation, dropout, dense softmax).

    Args:
        encoder: a ConvDAE, its encoder, or a code-only encoder (see :func:`code_encoder`);
            the classifier keeps a copy of it, so the given model is never modified.
        num_classes: number of classes of the softmax.
        pooling: one of :data:`POOLINGS`.
        dropout: dropout rate before the dense layer.
        freeze_encoder: keep the encoder's weights fixed (a linear probe on its features);
            the copy is frozen, and it runs in inference mode.
        image_size: ``(H, W)`` to fix the input size (needed by ``"flatten"``), or ``None``
            for any size.
    """

    def __init__(self, encoder, num_classes, pooling="avg", dropout=0.3, freeze_encoder=False,
                 image_size=None, **kwargs):
        size = _size(image_size)
        _check_pooling(pooling, size)
        if int(num_classes) < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        own = code_encoder(encoder)
        own.trainable = not freeze_encoder  # our copy: the caller's layers keep their flags
        image = keras.Input(_input_shape(own, size), name="image")
        code = own(image, training=False) if freeze_encoder else own(image)
        x = _pool(code, pooling)
        # Standardised features: a DAE's code can be tiny in scale (a weak code next to skip
        # connections), which a softmax layer at a sane learning rate cannot make up for. The
        # mean and variance are set by :meth:`adapt`; being fixed, a probe on them stays linear.
        # float32 under mixed precision too: standardising tiny features subtracts close numbers.
        x = layers.Normalization(axis=-1, dtype="float32", name="feature_norm")(x)
        x = layers.Dropout(float(dropout), name="dropout")(x)
        # float32 output under mixed precision: the loss needs the precision.
        probs = layers.Dense(int(num_classes), activation="softmax", dtype="float32",
                             name="predictions")(x)
        super().__init__(inputs=image, outputs=probs, **kwargs)
        self.encoder = own
        self.num_classes, self.pooling, self.dropout = int(num_classes), pooling, float(dropout)
        self.freeze_encoder, self.image_size = bool(freeze_encoder), size

    def adapt(self, images, batch_size: int = 256) -> None:
        """Sets the feature standardisation to the statistics of ``images``' pooled features.

        Args:
            images: float images ``(N, H, W, C)`` in ``[0, 1]``; labels are not needed.
            batch_size: images per forward pass.
        """
        pooled = keras.Model(self.inputs, self.get_layer(f"{self.pooling}_pool").output)
        features = pooled.predict(images, batch_size=batch_size, verbose=0)
        norm = self.get_layer("feature_norm")
        norm.adapt(features)
        # A feature that does not vary over ``images`` (a ReLU unit that never fires) is
        # centred, not scaled: divided by its zero spread, the first flicker of it that
        # fine-tuning or a new image brings would reach the softmax multiplied by 10⁷.
        # (scikit-learn's StandardScaler does the same, so the probe and the downstream
        # classifiers standardise alike.)
        variance = np.asarray(norm.adapt_variance)
        flat = variance <= 1e-12 * max(float(variance.max()), 1e-30)
        norm.adapt_variance.assign(np.where(flat, 1.0, variance).astype(variance.dtype))
        norm.finalize_state()

    def set_weights(self, weights):
        super().set_weights(weights)
        # keras' Normalization keeps a copy of its statistics, refreshed only by
        # finalize_state (as its own loading does): without this the copy would be stale.
        self.get_layer("feature_norm").finalize_state()

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "encoder": keras.saving.serialize_keras_object(self.encoder),
            "num_classes": self.num_classes,
            "pooling": self.pooling,
            "dropout": self.dropout,
            "freeze_encoder": self.freeze_encoder,
            "image_size": list(self.image_size) if self.image_size else None,
        }

    @classmethod
    def from_config(cls, config):
        config = copy.deepcopy(config)  # deserialisation consumes the nested dicts it reads
        config["encoder"] = keras.saving.deserialize_keras_object(config["encoder"])
        return cls(**config)

    def with_frozen_encoder(self, freeze: bool) -> EncoderClassifier:
        """A new classifier with this one's weights and ``freeze_encoder=freeze``.

        The way to go from training the head alone to fine-tuning everything: build a new
        model rather than flip flags on trained layers.
        """
        new = EncoderClassifier.from_config({**self.get_config(), "freeze_encoder": freeze})
        new.set_weights(self.get_weights())
        return new
