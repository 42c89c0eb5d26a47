"""semlayer app: a Gradio UI to explore, correct and export amodal annotations."""
