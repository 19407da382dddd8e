"""The runtime every optimizer service uses: a durable pull consumer shared by replicas, one
child process per job (timeout, memory limit, no credentials), progress events, ack/nak/term."""
