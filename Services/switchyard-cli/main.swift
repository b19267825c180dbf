print("switchyard CLI: being wired")
