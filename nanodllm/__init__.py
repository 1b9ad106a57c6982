"""nanodllm: AR, MDLM, Duo and Eso-LM language models on one small GPT backbone, under one FLOP accounting."""
