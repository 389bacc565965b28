"""MLPDAE: a fully connected denoising autoencoder r(x̃) = g(f(x̃)) for low-dimensional points.

The 2-D counterpart of :class:`models.conv_dae.ConvDAE`, used to show that a DAE learns the
score: trained with Gaussian corruption of std σ and squared error, r(x) − x estimates
σ²∇ log p_σ(x). The encoder f and the decoder g are separate, named functional models; with
``residual=True`` g also receives x̃ and predicts the correction r(x̃) − x̃ (the score estimate
itself), which it adds back, so the identity costs nothing and the capacity goes to the field.
Hidden units default to ReLU: with ``silu`` or ``tanh`` the 2-D mixture runs sat at the
identity (loss = σ², cosine ≈ 0) for the whole short budget, while ReLU left it at once.
"""

from __future__ import annotations

import keras
from keras import layers

from models.conv_dae import negative_log_likelihood


def build_encoder(dim, widths, code, activation, name="encoder"):
    """The encoder f: a point ``(dim,)`` -> the code h ``(code,)``."""
    point = keras.Input((dim,), name="point")
    x = point
    for i, width in enumerate(widths):
        x = layers.Dense(width, activation=activation, name=f"hidden{i}")(x)
    h = layers.Dense(code, activation=activation, name="code")(x)
    return keras.Model(point, h, name=name)


def build_decoder(dim, widths, code, activation, residual, name="decoder"):
    """The decoder g: the code (and, when ``residual``, the input point) -> reconstruction."""
    h = keras.Input((code,), name="code")
    x = h
    for i, width in enumerate(reversed(widths)):
        x = layers.Dense(width, activation=activation, name=f"hidden{i}")(x)
    if not residual:
        return keras.Model(h, layers.Dense(dim, name="reconstruction")(x), name=name)
    point = keras.Input((dim,), name="point")
    correction = layers.Dense(dim, name="correction")(x)
    out = layers.Add(name="reconstruction")([point, correction])
    return keras.Model([point, h], out, name=name)


def check_architecture(dim, widths, code, activation) -> tuple[int, ...]:
    """Refuses arguments :class:`MLPDAE` cannot be built with, before anything is built.

    Returns:
        ``widths`` as a tuple of ints.

    Raises:
        ValueError: naming the bad value (an unknown ``activation``, a width or size below 1).
    """
    widths = tuple(int(w) for w in widths)
    if int(dim) < 1 or int(code) < 1:
        raise ValueError(f"dim and code must be >= 1, got dim={dim}, code={code}")
    if min(widths, default=1) < 1:
        raise ValueError(f"widths must be positive ints, got {widths}")
    try:
        keras.activations.get(activation)
    except ValueError:
        raise ValueError(f"unknown activation {activation!r}; expected a Keras activation name "
                         "such as relu, silu or tanh") from None
    return widths


@keras.saving.register_keras_serializable(package="dae")
class MLPDAE(keras.Model):
    """A fully connected denoising autoencoder composed of a named encoder and decoder.

    Args:
        dim: dimension of the points (2 for the toy datasets).
        widths: hidden widths of the encoder; the decoder mirrors them.
        code: size of the code h = f(x̃) (larger than ``dim`` is fine: the noise, not a
            bottleneck, keeps a DAE from learning the identity).
        activation: hidden activation, any Keras activation name.
        residual: the decoder predicts r(x̃) − x̃ and adds x̃ back.
    """

    def __init__(self, dim=2, widths=(128,), code=128, activation="relu", residual=True,
                 **kwargs):
        super().__init__(**kwargs)
        widths = check_architecture(dim, widths, code, activation)
        self.dim, self.widths, self.code = int(dim), widths, int(code)
        self.activation, self.residual = activation, bool(residual)
        self.encoder = build_encoder(self.dim, widths, self.code, activation)
        self.decoder = build_decoder(self.dim, widths, self.code, activation, self.residual)
        self.build((None, self.dim))

    def call(self, inputs, training=False):
        h = self.encoder(inputs, training=training)
        return self.decoder([inputs, h] if self.residual else h, training=training)

    def encode(self, points):
        """The representation h = f(x̃)."""
        return self.encoder(points)

    def loss_function(self):
        """Squared error, -log of a Gaussian decoder up to constants, as for the image DAE."""
        return negative_log_likelihood("gaussian")

    def get_config(self):
        config = super().get_config()
        config.update(dim=self.dim, widths=list(self.widths), code=self.code,
                      activation=self.activation, residual=self.residual)
        return config
