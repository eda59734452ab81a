# CLIP ViT-B/16 with OpenAI's weights (downloaded once into open_clip's cache; or give a file path).
backbone = dict(name="ViT-B-16", pretrained="openai")
