"""Local servers for tests and benchmarks: private Mosquitto instances, an InfluxDB 2 HTTP stand-in."""
