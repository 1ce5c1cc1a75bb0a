"""What every method and both runtimes share: the messages and their wire format, the byte ledger, the models and
their layer list, local training, the newcomer fine-tuning protocol, payload codecs, aggregation (mean, robust,
server optimizers), the DP defence, simulated attackers and the changing population."""
