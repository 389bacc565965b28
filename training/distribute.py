"""Work-arounds that make Keras 3.15 ``fit()`` run under ``MultiWorkerMirroredStrategy``.

Keras 3.15's TensorFlow trainer has two multi-worker bugs, both hit by any model:
1. ``fit()`` first averages a sample batch across replicas to build the model
   (``TensorFlowTrainer._maybe_symbolic_build``), which fails with "Attempt to convert a
   value (PerReplica...)". We build the model from a local batch and skip that step.
2. ``reduce_per_replica`` averages per-replica metrics with ``strategy.reduce("MEAN", v,
   axis=0)``, which fails for the scalar loss ("Invalid reduction dimension 0 for input with 0
   dimensions"). We reduce scalars with ``axis=None`` and leave everything else to Keras.
"""

from __future__ import annotations


def patch_keras_for_multi_worker(model, sample_batch) -> None:
    """Applies both work-arounds; call inside the strategy scope, after ``compile``."""
    import tensorflow as tf
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer as tf_trainer

    original = getattr(tf_trainer.reduce_per_replica, "__wrapped__", tf_trainer.reduce_per_replica)

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and tf_trainer._collective_all_reduce_multi_worker(strategy):
            def mean(v):
                local = strategy.experimental_local_results(v)[0] if isinstance(
                    v, tf.distribute.DistributedValues) else v
                return strategy.reduce("MEAN", v, axis=0 if local.shape.rank else None)
            return tree.map_structure(mean, values)
        return original(values, strategy, reduction)

    reduce_per_replica.__wrapped__ = original
    tf_trainer.reduce_per_replica = reduce_per_replica
    model._symbolic_build(data_batch=sample_batch)
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None
