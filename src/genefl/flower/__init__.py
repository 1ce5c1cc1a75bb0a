"""The Flower runtime: a ServerApp and a ClientApp that drive the same server and client halves as
the simulator. Needs the optional extra `genefl[flower]`; the rest of genefl never imports flwr."""
