"""The core room (pure where it can be): scenarios, profiles and their schema, HF import, input limits, output paths."""
