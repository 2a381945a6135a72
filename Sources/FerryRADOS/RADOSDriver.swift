import CRados
import FerryCore
