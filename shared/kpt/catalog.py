"""Names of the model zoo, known without torch (the gateway validates against this list).

Each service builds these from configs (kpt.optimize.zoo); tests check both lists agree.
"""

ZOO = {
    "mlp": "3-layer MLP, batch 8 x 256",
    "cnn": "small CNN with conv+batchnorm blocks, 1 x 3 x 64 x 64",
    "bert-base": "BERT-base encoder (BertConfig), batch 1, seq 128",
    "gpt2": "GPT-2 small causal LM (GPT2Config), batch 1, seq 128",
    "minilm": "all-MiniLM-L6-v2 with its real weights, batch 1, seq 128",
    "resnet50": "ResNet-50 (ResNetConfig), 32 x 3 x 224 x 224",
    "vit-b16": "ViT-B/16 (ViTConfig), 32 x 3 x 224 x 224",
    "llama-1b": "Llama-style decoder of about 1B parameters (LlamaConfig)",
}
