enable f16;
// placeholder
