"""The models layer: the store of model folders, the registry (the multiplexer), model
management, the default models and the settings a model's manifest may carry."""
