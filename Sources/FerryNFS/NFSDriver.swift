import CNFS
import FerryCore
