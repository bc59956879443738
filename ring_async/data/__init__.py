"""The data plane: Arrow schemas of prompt groups, rollouts and train batches, and their checked IPC codec."""
