from django.db import migrations

X = ------------------------------------------------------------------------------------------------------------------------------------------------------1

class Migration(migrations.Migration):
    operations = []
