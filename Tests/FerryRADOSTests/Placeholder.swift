import FerryRADOS
