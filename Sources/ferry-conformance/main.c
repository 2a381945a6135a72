#include <stdio.h>
int main(void){puts("conformance");return 0;}
