"""Built-in runtimes for model folders: Hugging Face transformers tasks and TensorFlow
SavedModels, served with named tensors and no user code."""
