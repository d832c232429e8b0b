from .importance import per_example_log_weights, vectorized_traces
from .log_marginal_likelihood import LogMarginalLikelihood, log_marginal_likelihood

__all__ = ["LogMarginalLikelihood", "log_marginal_likelihood", "per_example_log_weights", "vectorized_traces"]
