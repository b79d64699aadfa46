"""The offload coordinator: rounds of personal requests planned by the policy server's DecideOffload,
split between edge servers and users' devices, each tracked to one terminal event."""
