from pipeline.schemas import HERE, write

for name in write():
    print(HERE / name)
