from tests.compose.standins import build, variables

build()
for name, tag in variables().items():
    print(f"{name}={tag}")
