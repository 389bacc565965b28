"""ConvDAE: a convolutional denoising autoencoder r(x̃) = g(f(x̃)).

The encoder f and the decoder g are separate, named functional Keras models that the DAE
composes. f maps an image ``(H, W, C)`` to a code ``(H / 2**depth, W / 2**depth, bottleneck)``;
with ``skips=True`` it also hands g its per-level feature maps (a U-Net), and with
``residual=True`` g predicts the correction ``r(x̃) - x̃`` and adds it back (residual learning,
as in DnCNN). Both are fully convolutional: any image whose sides are multiples of
``2**depth`` goes through (padding other sizes is the inference engine's job).

The decoder's output distribution sets the loss, the negative log-likelihood
``-log p_decoder(x | h)``: ``"gaussian"`` (linear output; squared error with a fixed variance,
or the mean log squared error per image with each image's variance fitted) or ``"bernoulli"``
(binary cross-entropy, sigmoid output: :class:`BoundedSigmoid`).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

DISTRIBUTIONS = ("gaussian", "bernoulli")


VARIANCES = ("fixed", "per_image")


@keras.saving.register_keras_serializable(package="dae")
class PerImageVarianceGaussianNLL(keras.losses.Loss):
    """``-log N(x; r, s² I)`` per pixel with each image's variance ``s²`` fitted by maximum
    likelihood: ``s² = mean((x - r)²)`` over the image, so the loss is ``½ log s²`` up to
    constants, averaged over the batch.

    Squared error weights every image by its error, so a blind model spends its capacity on
    the noisiest images. This loss weights every image alike in log space: its mean over
    images is ``-ln(10) / 20`` times their mean PSNR, the score the benchmark averages.

    Args:
        floor: added to ``s²`` (a 60 dB PSNR cap), so a perfect image cannot send it to -inf.
    """

    def __init__(self, floor=1e-6, name="gaussian_nll_per_image", **kwargs):
        super().__init__(name=name, **kwargs)
        self.floor = float(floor)

    def call(self, y_true, y_pred):
        y_pred = keras.ops.convert_to_tensor(y_pred)
        y_true = keras.ops.cast(y_true, y_pred.dtype)
        axes = tuple(range(1, len(y_pred.shape)))
        variance = keras.ops.mean(keras.ops.square(y_true - y_pred), axis=axes)
        return 0.5 * keras.ops.log(variance + self.floor)

    def get_config(self):
        return {**super().get_config(), "floor": self.floor}


@keras.saving.register_keras_serializable(package="dae")
class BoundedSigmoid(layers.Layer):
    """The Bernoulli decoder's output: ``sigmoid(b·tanh(z / b))`` of its logits ``z``, a sigmoid
    whose logit is softly held within ``±b``, so the probability stays within
    ``[sigmoid(-b), sigmoid(b)]`` (``b = 15``: 3e-7 from 0 and 1, finer than any 16-bit pixel step).

    Binary cross-entropy on probabilities clips them to ``[1e-7, 1 - 1e-7]``, and the clip
    passes no gradient: a pixel the plain sigmoid had saturated the wrong way (a logit of -20
    for a white pixel) never learned. TensorFlow hides this by reading the logits back off its
    sigmoid; JAX cannot. Held inside the clip, every pixel's gradient is
    ``(p - x)·sech²(z / b)``: that of the logits, which fades only where ``|z|`` passes ``b``.
    """

    def __init__(self, bound=15.0, **kwargs):
        super().__init__(**kwargs)
        self.bound = float(bound)

    def call(self, logits):
        return keras.ops.sigmoid(self.bound * keras.ops.tanh(logits / self.bound))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "bound": self.bound}


def negative_log_likelihood(distribution: str, variance: str = "fixed") -> keras.losses.Loss:
    """``-log p_decoder(x | h)`` up to constants, as a Keras loss; every DAE here trains with it.

    Args:
        distribution: ``"gaussian"`` (named ``gaussian_nll``) or ``"bernoulli"`` (binary
            cross-entropy, named ``bernoulli_nll``).
        variance: the Gaussian's: ``"fixed"`` (squared error) or ``"per_image"``
            (:class:`PerImageVarianceGaussianNLL`: the mean log squared error per image).
    """
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, got {distribution!r}")
    if variance not in VARIANCES:
        raise ValueError(f"variance must be one of {VARIANCES}, got {variance!r}")
    if distribution == "bernoulli":
        if variance != "fixed":
            raise ValueError("a bernoulli decoder has no variance to fit: variance must be 'fixed'")
        return keras.losses.BinaryCrossentropy(name="bernoulli_nll")
    if variance == "per_image":
        return PerImageVarianceGaussianNLL()
    return keras.losses.MeanSquaredError(name="gaussian_nll")


def _conv_block(x, width, name):
    for i in range(2):
        x = layers.Conv2D(width, 3, padding="same", name=f"{name}_conv{i}")(x)
        x = layers.Activation("relu", name=f"{name}_relu{i}")(x)
    return x


def build_encoder(channels, widths, bottleneck, skips, name="encoder"):
    """The encoder f: image -> code (plus the skip tensors when ``skips``)."""
    image = keras.Input((None, None, channels), name="image")
    x, outputs = image, [image] if skips else []
    for level, width in enumerate(widths):
        x = _conv_block(x, width, f"down{level}")
        if skips:
            outputs.append(x)
        x = layers.Conv2D(width, 3, strides=2, padding="same", name=f"down{level}_stride")(x)
        x = layers.Activation("relu", name=f"down{level}_stride_relu")(x)
    code = layers.Conv2D(bottleneck, 3, padding="same", name="code_conv")(x)
    code = layers.Activation("relu", name="code")(code)
    outputs.append(code)
    return keras.Model(image, outputs if skips else code, name=name)


def build_decoder(channels, widths, bottleneck, skips, residual, distribution, name="decoder"):
    """The decoder g: code (plus skips) -> reconstruction in the data's range."""
    code = keras.Input((None, None, bottleneck), name="code")
    inputs = [code]
    if skips:
        image = keras.Input((None, None, channels), name="image")
        skip_inputs = [keras.Input((None, None, w), name=f"skip{i}") for i, w in enumerate(widths)]
        inputs = [image, *skip_inputs, code]
    x = code
    for level in reversed(range(len(widths))):
        width = widths[level]
        x = layers.Conv2DTranspose(width, 3, strides=2, padding="same", name=f"up{level}_transpose")(x)
        x = layers.Activation("relu", name=f"up{level}_transpose_relu")(x)
        if skips:
            x = layers.Concatenate(name=f"up{level}_concat")([x, skip_inputs[level]])
        x = _conv_block(x, width, f"up{level}")
    # The output layer stays float32 under mixed precision: the loss needs the precision.
    if distribution == "bernoulli":
        logits = layers.Conv2D(channels, 1, dtype="float32", name="reconstruction_logits")(x)
        out = BoundedSigmoid(dtype="float32", name="reconstruction")(logits)
    elif residual and skips:
        delta = layers.Conv2D(channels, 3, padding="same", dtype="float32", name="correction")(x)
        image32 = layers.Activation("linear", dtype="float32", name="image_float32")(image)
        out = layers.Add(dtype="float32", name="reconstruction")([image32, delta])
    else:
        out = layers.Conv2D(channels, 3, padding="same", dtype="float32", name="reconstruction")(x)
    return keras.Model(inputs if skips else code, out, name=name)


def check_arguments(channels=1, widths=(32, 64), bottleneck=64, skips=True, residual=True,
                    distribution="gaussian") -> tuple[int, ...]:
    """Checks :class:`ConvDAE`'s arguments without building anything (configs call it before
    they write or load anything). Returns ``widths`` as a tuple of ints.

    Raises:
        ValueError: the first argument that is wrong, with the value received.
    """
    widths = tuple(int(w) for w in widths)
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if not widths or min(widths) < 1:
        raise ValueError(f"widths must be a non-empty list of positive ints, got {widths}")
    if int(bottleneck) < 1:
        raise ValueError(f"bottleneck must be a positive int, got {bottleneck}")
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, got {distribution!r}")
    if residual and (not skips or distribution != "gaussian"):
        raise ValueError("residual=True needs skips=True and a gaussian decoder "
                         f"(got skips={skips}, distribution={distribution!r})")
    return widths


@keras.saving.register_keras_serializable(package="dae")
class ConvDAE(keras.Model):
    """A convolutional denoising autoencoder composed of a named encoder and decoder.

    Args:
        channels: image channels, 1 (grey) or 3 (colour).
        widths: filters per resolution level; ``len(widths)`` is the depth (stride
            ``2**depth``).
        bottleneck: channels of the code h = f(x̃).
        skips: U-Net skip connections from encoder to decoder.
        residual: the decoder predicts r(x̃) - x̃ (needs ``skips`` and a Gaussian decoder).
        distribution: ``"gaussian"`` (squared error) or ``"bernoulli"`` (cross-entropy).
    """

    def __init__(self, channels=1, widths=(32, 64), bottleneck=64, skips=True, residual=True,
                 distribution="gaussian", **kwargs):
        # The composite never casts its input: its layers compute in their own dtype (the
        # global policy's when built, float32 for the output), so the residual adds back the
        # exact float32 x̃. (Models saved before carry "mixed_bfloat16" here; it is dropped.)
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        widths = check_arguments(channels, widths, bottleneck, skips, residual, distribution)
        self.channels, self.widths, self.bottleneck = int(channels), widths, int(bottleneck)
        self.skips, self.residual, self.distribution = bool(skips), bool(residual), distribution
        self.encoder = build_encoder(self.channels, widths, self.bottleneck, self.skips)
        self.decoder = build_decoder(self.channels, widths, self.bottleneck, self.skips,
                                     self.residual, distribution)
        self.build((None, None, None, self.channels))

    @property
    def stride(self) -> int:
        """Image sides must be multiples of this."""
        return 2 ** len(self.widths)

    def call(self, inputs, training=False):
        return self.decoder(self.encoder(inputs, training=training), training=training)

    def encode(self, images):
        """The representation h = f(x̃), the code tensor alone."""
        out = self.encoder(images)
        return out[-1] if self.skips else out

    def loss_function(self, variance: str = "fixed"):
        """The negative log-likelihood of the decoder's distribution, as a Keras loss
        (``variance``: see :func:`negative_log_likelihood`)."""
        return negative_log_likelihood(self.distribution, variance)

    def get_config(self):
        config = super().get_config()
        config.update(channels=self.channels, widths=list(self.widths), bottleneck=self.bottleneck,
                      skips=self.skips, residual=self.residual, distribution=self.distribution)
        return config


def widen(source: ConvDAE, target: ConvDAE) -> ConvDAE:
    """Sets ``target``'s weights so that it computes exactly what ``source`` computes, when
    ``target`` is ``source`` with more filters (function-preserving
    widening, as in Net2Net: Chen et al. 2016).

    Each layer's old kernel and bias go into the leading channels of the wider one. The new
    filters keep ``target``'s random initialisation on their inputs from the old ones, and
    every weight that reads a new filter is zero, so the new filters change nothing until
    training moves those weights. Training the wider model then starts where ``source``
    stopped instead of from scratch.

    Raises:
        ValueError: ``target`` is not ``source`` widened (another depth, fewer filters, a
            different channel count, decoder or skip layout); the message names what differs.
    """
    ours, theirs = source.get_config(), target.get_config()
    fixed = ("channels", "skips", "residual", "distribution")
    diff = [f"{key} {ours[key]} vs {theirs[key]}" for key in fixed if ours[key] != theirs[key]]
    if len(ours["widths"]) != len(theirs["widths"]):
        diff.append(f"depth {len(ours['widths'])} vs {len(theirs['widths'])} levels")
    elif any(a > b for a, b in zip(ours["widths"] + [ours["bottleneck"]],
                                  theirs["widths"] + [theirs["bottleneck"]], strict=True)):
        diff.append(f"widths {ours['widths']} + bottleneck {ours['bottleneck']} vs "
                    f"{theirs['widths']} + {theirs['bottleneck']}: a model can only be widened")
    if diff:
        raise ValueError(f"cannot widen the model: {'; '.join(diff)}")

    def input_blocks(layer_name, old_in, new_in):
        """(old start, new start, length) of each block of input channels."""
        if source.skips and layer_name.startswith("up") and layer_name.endswith("_conv0"):
            old_half, new_half = old_in // 2, new_in // 2  # concatenated [upsampled, skip]
            return [(0, 0, old_half), (old_half, new_half, old_half)]
        return [(0, 0, old_in)]

    for part in ("encoder", "decoder"):
        old_layers = {layer.name: layer for layer in getattr(source, part).layers}
        for layer in getattr(target, part).layers:
            if not layer.weights:
                continue
            old_kernel, old_bias = old_layers[layer.name].get_weights()
            fresh, bias = layer.get_weights()
            transposed = isinstance(layer, layers.Conv2DTranspose)  # kernels (h, w, out, in)
            if transposed:
                fresh, old_kernel = fresh.swapaxes(2, 3), old_kernel.swapaxes(2, 3)
            old_out = old_kernel.shape[3]  # kernels are (h, w, in, out) from here on
            kernel = np.zeros_like(fresh)
            for old_start, new_start, length in input_blocks(layer.name, old_kernel.shape[2],
                                                             fresh.shape[2]):
                rows = slice(new_start, new_start + length)
                kernel[:, :, rows, :old_out] = old_kernel[:, :, old_start:old_start + length]
                kernel[:, :, rows, old_out:] = fresh[:, :, rows, old_out:]
            bias = np.zeros_like(bias)
            bias[:old_out] = old_bias
            layer.set_weights([kernel.swapaxes(2, 3) if transposed else kernel, bias])
    return target
