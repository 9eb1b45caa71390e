"""Runtime and IO: storage, atomic files, video, progress, processes and sharding, the workdir lock, images."""
