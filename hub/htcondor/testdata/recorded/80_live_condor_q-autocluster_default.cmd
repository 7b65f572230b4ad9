condor_q -pool 127.0.0.1:29618 -allusers -autocluster -json
