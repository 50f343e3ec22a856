import sys
print("SYS.PATH", sys.path[:4])
