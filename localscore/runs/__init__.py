"""What each command runs over a whole dataset: scoring (single process, shards, Ray), embedding, selection and
comparison, built from the forms, the llama contexts and Deita's rules."""
