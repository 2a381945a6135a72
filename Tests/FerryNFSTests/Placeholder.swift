import FerryNFS
