import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# On JAX: a Bernoulli ConvDAE whose output pixels are all saturated the wrong
# way (logit -20 where the target is white); the gradient of its loss on the output layer's
# bias, and the probabilities it outputs, saved and loaded.
SCRIPT = r"""
import json, sys
import numpy as np
import keras
from models.conv_dae import ConvDAE

keras.utils.set_random_seed(0)
model = ConvDAE(channels=1, widths=(4,), bottleneck=4, skips=True, residual=False,
                distribution="bernoulli")
out = [layer for layer in model.decoder.layers if isinstance(layer, keras.layers.Conv2D)][-1]
kernel, bias = out.get_weights()
out.set_weights([np.zeros_like(kernel), np.full_like(bias, -20.0)])
x = np.ones((2, 8, 8, 1), np.float32)
loss_fn = model.loss_function()
import jax
def loss_of(b):
    values = [v.value for v in model.trainable_variables]
    index = [i for i, v in enumerate(model.trainable_variables) if v.path == out.bias.path][0]
    values[index] = b
    y, _ = model.stateless_call(values, [v.value for v in model.non_trainable_variables], x)
    return loss_fn(x, y)
grad = np.asarray(jax.grad(loss_of)(out.bias.value))
probs = np.asarray(model(x))
model.save(sys.argv[1])
again = keras.saving.load_model(sys.argv[1])
print(json.dumps({"grad": float(grad[0]), "min": float(probs.min()), "max": float(probs.max()),
                  "reloaded": float(np.abs(np.asarray(again(x)) - probs).max())}))
"""


def test_a_pixel_saturated_the_wrong_way_still_learns_on_jax(tmp_path):
    # (TensorFlow reads the logits back off its sigmoid; the Bernoulli tests of
    # test_conv_dae.py and test_specialists.py train on it.)
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "jax.keras")],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    # The loss pulls the white pixels' logits up: about (p - 1)·sech²(20/15) = -0.24 per
    # pixel, averaged. With a plain sigmoid, JAX's gradient here was exactly 0.
    assert result["grad"] < -0.1, result
    # Probabilities stay inside Keras' [1e-7, 1 - 1e-7] clip, and survive saving.
    assert 1e-7 < result["min"] <= result["max"] < 1e-5, result
    assert result["reloaded"] == 0.0, result
