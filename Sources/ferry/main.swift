import FerryCLI

ferryMain()
