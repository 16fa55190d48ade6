"""The two small models: a strong transformer encoder and a weak BiLSTM, and their files."""
