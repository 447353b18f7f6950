/* Placeholder: this unit test is being written. */
int main(void)
{
	return 77;
}
