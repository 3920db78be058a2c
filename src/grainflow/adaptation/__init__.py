"""Adapting the synthetic-trained networks to a user's own stack: few-label fine-tuning
cross-validated over real specimens, and unsupervised adaptation on unlabelled planes."""
