"""What a converted network costs, counted as hardware would do it on the changes its neurons send, and
its ANN by the same rules (docs/energy.md has the model with examples).

- **Synaptic work, node by node** (``synapses.py``): in the event-driven execution every affine node
  receives the change of its input at each step; for every element that changed it does one operation
  per output it reaches through a non-zero weight. Neurons send a change only when they spike (the
  binary signGD neuron: its "down" steps, its "up" drift is a constant the receiver adds; the sparse
  neuron: its up and down spikes; integrate-and-fire: its spikes), and at every step when their step
  size is adaptive (each receiver multiplies by the sender's gain; an exponent add when every step is a
  power of two, ``adaptive(pow2=True)``). The input sends its change: every
  element at every step for the ``float`` encoding, once for ``analog``, its spikes for ``spike`` and
  ``stochastic``.
- **Accumulate or multiply**: an event (a spike times a static scale, or a power-of-two adaptive step
  times it) costs an AC per synapse, a real-valued change (float input, adaptive gains, anything a sum
  produced) a MAC; additions are ACs; a multiply by a power of two is an exponent add, an AC.
- **Neuron work** (``op_costs.py``): per neuron per step, evaluating its target, comparing, moving its
  estimate, normalizing, the adaptive gain, and each input element's integration; the sparse neuron
  works only when an event asks for it: it checks its gap only when the gap or the threshold changed.
- **The ANN**: the same graph and rules on dense, real values.
- **Energy**: ``ACs x E_AC + MACs x E_MAC``, 0.9 pJ and 4.6 pJ by default (45 nm, Horowitz 2014;
  ``EnergyModel``). Memory traffic is not counted, on either side.

``counting.py`` reads a network with these rules (``StepCounter`` during a simulation); the report's
energy section (``signgd.report.energy``) and the energy-aware tuning (``signgd.tuning``) both use it.
"""
from .counting import (
    EVENT_KINDS,
    INPUT,
    READOUT,
    EnergyModel,
    StepCounter,
    ann_costs,
    ann_energy,
    counting_copy,
    dense_synaptic_ops,
    energy_per_sample,
    event_costs,
    neuron_work,
    neuron_work_steps,
    node_of,
)

__all__ = ["EnergyModel", "StepCounter", "ann_costs", "neuron_work", "neuron_work_steps", "event_costs",
           "dense_synaptic_ops", "counting_copy", "node_of", "ann_energy", "energy_per_sample", "INPUT", "READOUT",
           "EVENT_KINDS"]
