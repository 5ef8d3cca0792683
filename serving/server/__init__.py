"""A TensorFlow-Serving-compatible model server (gRPC and REST), started with `tensorflow_model_server`'s flags."""
