"""What makes a run: config checks, resolvers, devices, the job's start and finish, the console,
the TensorBoard record, safe checkpoint reading and atomic writing, resume, callbacks, train(cfg).
Imports the core (models, data, classifier) and never the tools."""
