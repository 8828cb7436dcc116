"""Words to embeddings: the CLIP text encoder, prompt templates, vocabularies and their cache."""
