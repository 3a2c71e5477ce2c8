package saga_test

const childEnv = "POLYBUS_SAGA_CHILD"

func sagaChild() int { return 0 }
