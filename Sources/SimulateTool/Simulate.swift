print("snapback-simulate: not built yet")
