condor_off -peaceful -master -addr <127.0.0.1:37065?addrs=127.0.0.1-37065&alias=try1>
