"""The paper's model, Qwen-VL-Chat, written here for transformers 5: modeling.py, processing.py, and its check against
the official code's outputs (verify.py, reference/)."""
