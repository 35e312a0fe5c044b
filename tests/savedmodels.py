"""Small real TensorFlow SavedModels, exported at test time (needs the extra: pip install 'elastic-inference[tensorflow]').

- :func:`export_text_classifier`: a Keras model (TextVectorization -> Embedding -> mean -> Dense softmax) with one
  string input, exported with Keras' ``model.export`` (its ``serving_default`` signature);
- :func:`export_regressor`: a ``tf.Module`` with two float inputs (``x`` ``[-1, 3]``, ``scale`` ``[-1]``) and two
  outputs, saved with ``tf.saved_model.save``;
- :func:`export_example_model`: the TF1 builder's classification and regression signatures over serialized
  ``tf.train.Example`` protos (what ``:classify``/``:regress`` serve), plus a predict signature.

Each writes ``<base>/<version>/`` and returns that directory. Weights come from fixed seeds.
"""

from __future__ import annotations

from pathlib import Path

import pytest

TF_REASON = ("TensorFlow is not installed: the real-model tests need the optional extra "
             "(pip install 'elastic-inference[tensorflow]'; `make install` installs it)")


def tensorflow():
    """The tensorflow module, or skip the test saying how to enable it."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return pytest.importorskip("tensorflow", reason=TF_REASON)


TEXTS = ["a wonderful warm film", "dull and far too long", "great acting, great story", "boring plot",
         "I loved every minute", "a waste of time"]
LABELS = [1, 0, 1, 0, 1, 0]


def export_text_classifier(base: Path, version: int) -> Path:
    tf = tensorflow()
    import keras

    keras.utils.set_random_seed(7)
    vectorize = keras.layers.TextVectorization(max_tokens=64, output_sequence_length=8)
    vectorize.adapt(tf.constant(TEXTS))
    text = keras.Input(shape=(), dtype="string", name="text")
    x = vectorize(text)
    x = keras.layers.Embedding(64, 8)(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    probabilities = keras.layers.Dense(2, activation="softmax", name="probabilities")(x)
    model = keras.Model(text, probabilities)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(tf.constant(TEXTS), tf.constant(LABELS), epochs=3, verbose=0)
    out = Path(base) / str(version)
    model.export(str(out), verbose=False)
    return out


def export_regressor(base: Path, version: int) -> Path:
    tf = tensorflow()

    class Regressor(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = tf.Variable([[0.5], [-1.25], [2.0]], dtype=tf.float32)
            self.b = tf.Variable([0.1], dtype=tf.float32)

        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x"),
                                      tf.TensorSpec([None], tf.float32, name="scale")])
        def serve(self, x, scale):
            y = tf.matmul(x, self.w) + self.b
            return {"y": y, "y_scaled": tf.squeeze(y, 1) * scale}

    module = Regressor()
    out = Path(base) / str(version)
    tf.saved_model.save(module, str(out), signatures={"serving_default": module.serve})
    return out


def export_example_model(base: Path, version: int) -> Path:
    """``classify`` (classes + scores over 3 labels), ``regress`` and ``serving_default`` (predict on ``x``)."""
    tf = tensorflow()
    v1 = tf.compat.v1
    out = Path(base) / str(version)
    graph = tf.Graph()
    with graph.as_default():
        serialized = v1.placeholder(tf.string, [None], name="tf_example")
        features = v1.parse_example(serialized, {"x": v1.FixedLenFeature([2], tf.float32),
                                                 "bias": v1.FixedLenFeature([1], tf.float32, default_value=[0.0])})
        x = features["x"]
        w = tf.constant([[1.0, -0.5, 0.25], [0.5, 2.0, -1.0]])
        logits = tf.matmul(x, w) + features["bias"]
        scores = tf.nn.softmax(logits)
        classes = tf.tile(tf.constant([["negative", "neutral", "positive"]]), [tf.shape(x)[0], 1])
        value = tf.reduce_sum(x * tf.constant([3.0, -2.0]), axis=1, keepdims=True) + features["bias"]
        x_in = v1.placeholder(tf.float32, [None, 2], name="x")
        direct = tf.matmul(x_in, w)
        sm = v1.saved_model
        with v1.Session(graph=graph) as sess:
            builder = sm.Builder(str(out))
            builder.add_meta_graph_and_variables(sess, [sm.tag_constants.SERVING], signature_def_map={
                "classify": sm.classification_signature_def(serialized, classes, scores),
                "regress": sm.regression_signature_def(serialized, value),
                "serving_default": sm.predict_signature_def({"x": x_in}, {"logits": direct}),
            })
            builder.save()
    return out
