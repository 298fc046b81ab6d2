"""A-LLMRec alignment (Kim et al., KDD 2024): ``stage1`` aligns a frozen SASRec with item text."""
